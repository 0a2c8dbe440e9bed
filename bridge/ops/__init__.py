"""What operators look at and act on; shared by the CLI, the ops page and Flower tasks."""

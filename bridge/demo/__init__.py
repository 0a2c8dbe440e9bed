"""The demo: the whole product on one machine with no server, against five sandboxes."""

"""The sync engine: inbox → ingest → canonical → deliveries → push, plus retry, sweep, poll."""

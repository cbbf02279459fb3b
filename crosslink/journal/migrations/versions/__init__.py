"""One module per schema version of the journal, oldest first."""

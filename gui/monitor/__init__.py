"""The live GPU and host monitor."""

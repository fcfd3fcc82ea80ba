"""What the user chooses: the devices panel and the model panel."""

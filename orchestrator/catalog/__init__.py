"""What can be installed: the catalog of workers, what is installed, and the model store."""

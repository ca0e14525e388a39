"""The run directory: its layout and frozen configuration, the state, the Zarr stores."""

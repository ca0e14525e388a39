"""What a run hands out: provincial COGs, the national VRT, statistics, quicklooks, STAC items."""

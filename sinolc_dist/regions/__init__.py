"""Where to run: provinces, region specs, chunk selection and the plan."""

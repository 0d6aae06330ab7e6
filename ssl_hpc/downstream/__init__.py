"""Science from representations: photometric redshifts and morphology from few labels."""

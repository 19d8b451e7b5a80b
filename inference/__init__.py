"""MedSAM proposals for image crops: arrays in, arrays out (a pure library)."""

"""Accuracy of a run: reference points, another map, official statistics; and samples to label."""

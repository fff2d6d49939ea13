"""The embedded default corpus: synthetic SpeakingFaces-format speakers and DEMAND-format noise."""

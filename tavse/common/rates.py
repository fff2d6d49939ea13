"""The rates every stage shares. They are facts of the corpus and the metrics, not choices:

* video keeps SpeakingFaces' frame rate (it is never resampled);
* audio is resampled once, at ingest, from SpeakingFaces' 44.1 kHz to the 16 kHz that the
  models, the mixtures and PESQ-WB/STOI take.
"""

FPS = 28
SAMPLE_RATE = 16000
SPEAKINGFACES_SAMPLE_RATE = 44100

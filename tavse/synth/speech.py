"""Offline, bit-deterministic synthetic speech from the espeak-ng library bundled in ``espeakng-loader``.

Two things make plain espeak-ng non-reproducible, and both are handled here:

* It keeps synthesis state (pitch/wave-generator history) across utterances, so two
  identical requests in one loaded library give different samples (even different lengths).
  Each utterance therefore runs in a freshly loaded library: a private in-memory copy of the
  ``.so`` is ``dlopen``-ed, used once and ``dlclose``-d, and we check it really went away. The
  copy is private (its own inode) so another user of the packaged library in this process
  cannot pin it in memory.
* ``espeak_Initialize`` seeds its internal RNG (used for voice flutter/roughness/breath,
  audible in e.g. the ``+f2`` variants) from ``time(NULL)``, so output changes every second.
  We reseed it with ``espeak_ng_SetRandSeed`` from (text, voice) right after initialising.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tavse.common.seeding import stable_seed
from tavse.synth import detmath as dm

__all__ = [
    "COMMANDS",
    "ESPEAK_SAMPLE_RATE",
    "LANGUAGES",
    "MALE_VARIANTS",
    "FEMALE_VARIANTS",
    "EspeakError",
    "Voice",
    "synthesize",
    "voice_for_speaker",
]

# espeak-ng's native output rate for its formant synthesiser.
ESPEAK_SAMPLE_RATE = 22050

# SpeakingFaces-style spoken commands; the tuple index is the global phrase ID, so only append.
COMMANDS: tuple[str, ...] = (
    "turn on the kitchen lights",
    "turn off the bedroom lights",
    "what is the weather tomorrow",
    "set an alarm for seven",
    "play some relaxing music",
    "stop the music",
    "call my mother",
    "open the garage door",
    "close the living room curtains",
    "what time is it",
    "set a timer for ten minutes",
    "lock the front door",
    "turn up the volume",
    "turn down the volume",
    "increase the temperature by two degrees",
    "lower the thermostat please",
    "read my new messages",
    "send a message to John",
    "what is on my calendar today",
    "remind me to buy milk",
    "add eggs to the shopping list",
    "how far is the airport",
    "navigate to the nearest gas station",
    "start the washing machine",
    "is the oven still on",
    "dim the lights in the hallway",
    "switch on the television",
    "change the channel to the news",
    "pause the movie",
    "resume playback on the speaker",
    "skip to the next song",
    "play the previous track",
    "what is the capital of France",
    "tell me a joke",
    "how do you spell restaurant",
    "convert ten miles to kilometers",
    "what is twelve times eight",
    "book a table for two",
    "order a pizza for dinner",
    "find a coffee shop nearby",
    "when does the pharmacy close",
    "call a taxi to my home",
    "turn on the air conditioner",
    "turn off the heater",
    "open the window blinds",
    "is it going to rain today",
    "how cold is it outside",
    "set the lights to blue",
    "make the lights brighter",
    "start vacuuming the living room",
    "stop the robot vacuum",
    "water the garden at six",
    "show me the front door camera",
    "who is at the door",
    "arm the security system",
    "disarm the alarm",
    "what is the traffic like",
    "how long is my commute",
    "play the latest podcast episode",
    "read the morning headlines",
    "what is the score of the game",
    "wake me up at half past six",
    "cancel my next alarm",
    "snooze for five minutes",
    "turn on do not disturb",
    "call the office",
    "answer the call",
    "hang up the phone",
    "mute the microphone",
    "take a photo",
    "record a voice memo",
    "play my workout playlist",
    "shuffle all my songs",
    "repeat this song",
    "how many steps did I take",
    "start a thirty minute workout",
    "what should I cook tonight",
    "how long do I boil an egg",
    "preheat the oven to two hundred",
    "turn off the coffee machine",
    "brew a cup of coffee",
    "is the dishwasher finished",
    "open the fridge camera",
    "what is in the fridge",
    "turn on the porch light",
    "switch off all the lights",
    "say good night to everyone",
    "good morning what is new",
    "set the house to away mode",
    "I am home",
    "turn on the bathroom fan",
    "fill the bathtub with warm water",
    "what is my heart rate",
    "remind me to take my medicine",
    "schedule a meeting for Monday",
    "email the report to Sarah",
    "translate thank you into Spanish",
    "what does this word mean",
    "find my phone",
    "where did I park the car",
    "start the car engine",
    "how much battery is left",
    "charge the car tonight",
    "turn on the sprinklers",
    "close the garage",
    "feed the cat at noon",
    "play white noise in the nursery",
    "turn on the baby monitor",
    "lower the blinds halfway",
    "what is the humidity inside",
    "check the air quality",
    "open my shopping cart",
    "track my package",
    "when will my order arrive",
    "pay the electricity bill",
    "what is my account balance",
    "set the volume to twenty",
    "play jazz in the kitchen",
    "stop all timers",
    "how long until sunset",
    "tell me something interesting",
)

# English voices that ``espeak_SetVoiceByName`` resolves in espeak-ng 1.52. ("en" is British
# English; the bare name "en-gb" is *not* a voice file and is rejected.)
LANGUAGES: tuple[str, ...] = (
    "en-us",
    "en",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
# Human-sounding timbre variants from espeak-ng-data/voices/!v (skipping the novelty ones).
MALE_VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")

# espeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a missing data folder instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Leading/trailing silence kept after trimming, and the level below peak counted as silence.
_KEEP_SILENCE_S = 0.05
_SILENCE_DB = -40.0


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or failed to synthesise an utterance."""


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: voice name (language[+variant]), rate in wpm, pitch and range 0-99."""

    name: str
    rate: int = 170
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self) -> None:
        if not self.name or "\0" in self.name:
            raise ValueError(f"invalid espeak voice name {self.name!r}")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"rate {self.rate} wpm outside espeak's 80-450")
        for field, value in (("pitch", self.pitch), ("pitch_range", self.pitch_range)):
            if not 0 <= value <= 99:
                raise ValueError(f"{field} {value} outside 0-99")


def voice_for_speaker(speaker_id: int, seed: int) -> Voice:
    """The deterministic voice of ``speaker_id`` under corpus ``seed``: accent, sex, timbre, prosody."""
    rng = np.random.default_rng(stable_seed("voice", int(seed), int(speaker_id)))
    language = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
    female = bool(rng.integers(2))
    variants = FEMALE_VARIANTS if female else MALE_VARIANTS
    variant = variants[int(rng.integers(len(variants)))]
    return Voice(
        name=f"{language}+{variant}",
        rate=int(rng.integers(130, 191)),
        pitch=int(rng.integers(30, 71)),
        pitch_range=int(rng.integers(30, 81)),
    )


class _PrivateLibrary:
    """A process-private in-memory copy of libespeak-ng that can be loaded fresh per utterance."""

    def __init__(self) -> None:
        import espeakng_loader  # imported lazily: only synthesis needs it

        self.data_path = str(Path(espeakng_loader.get_data_path()))
        source = Path(espeakng_loader.get_library_path())
        self._fd: int | None = None
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            # Own inode => the dynamic loader never shares it with other users of the package.
            self._fd = os.memfd_create("tavse-espeak-ng", os.MFD_CLOEXEC)
            os.write(self._fd, source.read_bytes())
            self.path = f"/proc/self/fd/{self._fd}"
        else:
            self.path = str(source)

    def is_loaded(self) -> bool:
        """True when the loader still maps this copy (RTLD_NOLOAD opens only an already loaded one)."""
        try:
            probe = ctypes.CDLL(self.path, mode=ctypes.RTLD_LOCAL | os.RTLD_NOLOAD)
        except OSError:
            return False
        _ctypes.dlclose(probe._handle)
        return True

    def load(self) -> ctypes.CDLL:
        if self.is_loaded():
            raise EspeakError("espeak-ng is already loaded; refusing to reuse its state")
        lib = ctypes.CDLL(self.path, mode=ctypes.RTLD_LOCAL)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        return lib

    def unload(self, lib: ctypes.CDLL) -> None:
        _ctypes.dlclose(lib._handle)
        if self.is_loaded():
            raise EspeakError(
                f"espeak-ng at {self.path} stayed loaded after dlclose; the next utterance would not be deterministic"
            )


_LOCK = threading.Lock()
_LIBRARY: _PrivateLibrary | None = None


def _after_fork_in_child() -> None:
    # A fork may happen while another thread holds the lock or has the library mapped:
    # give the child a fresh lock and its own private copy (new inode, nothing loaded).
    # The inherited descriptor is deliberately left open: were its number reused for the
    # new copy, the loader would match the name of a copy still mapped from the parent.
    global _LOCK, _LIBRARY
    _LOCK = threading.Lock()
    _LIBRARY = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _raw_synthesize(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Run one utterance in a freshly loaded library; returns int16 samples and the rate."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = _PrivateLibrary()
    private = _LIBRARY
    chunks: list[np.ndarray] = []

    def collect(wav, n_samples, _events) -> int:
        if wav and n_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = keep synthesising

    callback = _SynthCallback(collect)  # kept referenced until synthesis ends
    lib = private.load()
    rate = 0
    try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, private.data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data at {private.data_path})")
        # Initialize seeded the RNG from the wall clock; replace that with a seed from the inputs.
        lib.espeak_ng_SetRandSeed(
            stable_seed("espeak", text, voice.name, voice.rate, voice.pitch, voice.pitch_range) % 2**31
        )
        lib.espeak_SetSynthCallback(callback)
        status = lib.espeak_SetVoiceByName(voice.name.encode())
        if status != _EE_OK:
            raise EspeakError(f"espeak-ng has no voice {voice.name!r} (status {status})")
        # Parameters after the voice: selecting a voice would otherwise reset them.
        for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch), (_PARAM_RANGE, voice.pitch_range)):
            if lib.espeak_SetParameter(param, value, 0) != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed for {voice}")
        encoded = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed (status {status}) for {text!r} with {voice}")
        lib.espeak_Synchronize()
    finally:
        if rate > 0:
            lib.espeak_Terminate()  # frees espeak's heap buffers before the code is unmapped
        private.unload(lib)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return samples.astype(np.int16, copy=False), int(rate)


def _trim_silence(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading/trailing silence down to ``_KEEP_SILENCE_S`` each side."""
    peak = float(np.max(np.abs(x)))
    loud = np.flatnonzero(np.abs(x) > peak * dm.exp10(_SILENCE_DB / 20))
    keep = int(round(_KEEP_SILENCE_S * sample_rate))
    start = max(int(loud[0]) - keep, 0)
    stop = min(int(loud[-1]) + 1 + keep, len(x))
    return x[start:stop]


def synthesize(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``: float32 mono samples in [-1, 1] and their rate (22050 Hz).

    Bit-identical for the same (text, voice) in any process. Leading/trailing silence is
    trimmed to about 50 ms. Raises :class:`EspeakError` if espeak fails or produces silence.
    """
    if not text or not text.strip():
        raise ValueError("cannot synthesise empty text")
    if "\0" in text:
        raise ValueError("text must not contain NUL characters")
    with _LOCK:
        raw, rate = _raw_synthesize(text, voice)
    if raw.size == 0 or not np.any(raw):
        raise EspeakError(f"espeak-ng produced no audio for {text!r} with {voice}")
    samples = raw.astype(np.float32) / np.float32(32768.0)
    return _trim_silence(samples, rate), rate

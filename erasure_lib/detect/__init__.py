"""Detectors: input-level backdoor detection (SET and its baselines) and AI-generated image detection (NS-Net).

Every backdoor detector has the same surface: ``fit(pipe, clean_prompts, ...)`` (training-free ones accept it and
only calibrate a threshold), ``score(pipe, prompts) -> np.ndarray`` (higher = more likely to carry a trigger) and
``detect(pipe, prompts) -> np.ndarray[bool]``. The pipeline is the (possibly backdoored) model being protected:
apply a backdoor with :func:`erasure_lib.backdoors.applied` first.

* :mod:`.attention`: diffusers attention processors that scale attention logits and record what a detector reads;
* :mod:`.set`: SET, response offsets under attention scaling + a soft-boundary Deep-SVDD;
* :mod:`.t2ishield`: T2IShield's FTT and CDA (attention-map statistics);
* :mod:`.ufid`: UFID-style output-consistency test.
"""

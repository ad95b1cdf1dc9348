"""Offline stand-ins for what tests, smoke runs and newcomers would otherwise download or run.

:mod:`cotforge.testing.tiny` builds a tiny random Qwen2.5-VL checkpoint;
:mod:`cotforge.testing.synth` writes a small FGVC-Aircraft dataset in its official layout with
generated images; :mod:`cotforge.testing.openai_server` is a scripted OpenAI-compatible server;
:mod:`cotforge.testing.hub_server` speaks enough of the Hugging Face Hub's HTTP protocol to push
an export to and load it back.
All of them work with no network, so ``cotforge datasets synth`` plus the tiny model exercise
the whole pipeline here.
"""

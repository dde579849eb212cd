"""Backdoor attacks on text-to-image diffusion models, planted by the project's own code (SET's threat models).
"""

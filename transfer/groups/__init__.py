"""Per-group analyses of a pretrained model (SWAG section 5 and appendix F; SEER's fairness
indicators, Goyal et al. 2022b): `python -m transfer.groups geo|associations|harmful|retrieval`."""

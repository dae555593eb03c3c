"""The wires the DSO speaks to HEMSs: OpenADR 2.0b (openleadr)."""

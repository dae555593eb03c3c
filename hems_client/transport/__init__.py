"""The wires the HEMS speaks to the DSO: OpenADR 2.0b (openleadr)."""

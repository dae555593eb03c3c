"""The OpenADR 2.0b VTN on openleadr."""

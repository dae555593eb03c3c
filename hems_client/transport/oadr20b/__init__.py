"""The OpenADR 2.0b VEN on openleadr."""

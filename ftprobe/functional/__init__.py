"""Pure tensor functions (tensor in, tensor out) behind every built-in metric; the numeric tests pin these."""

"""What the gateway, the workers and clients share: protocol, wire envelope, config, client."""

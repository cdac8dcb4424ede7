"""Load-testing tools: `debate-engine load`, a ghz-compatible gRPC load client."""

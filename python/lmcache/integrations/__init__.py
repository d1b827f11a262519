"""Engine adapters: each turns one engine's objects into neutral CacheEngine calls."""

"""Built-in job executors: ``shell``, ``wasm``, ``nix``."""

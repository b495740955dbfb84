"""Models: loading, architecture adapters (llama, mistral, qwen2), surgery, save/load of pruned models."""

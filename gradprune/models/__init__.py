"""Models: loading and architecture adapters (llama, mistral, qwen2, ...); cutting and saving a pruned model is gradprune.cut."""

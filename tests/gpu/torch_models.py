"""The models the PyTorch GPU tests run (torch_allocator_gpu.py,
torch_sleep_gpu.py): built the same way in every process, so runs on
different allocators compare like with like."""


def deterministic(torch):
    """Seeded, deterministic algorithms, no TF32: outputs comparable with torch.equal."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def build(model, torch, tokens=512):
    """(net on the CPU, its input on the CPU, forward(net, input) -> output):
    torchvision's ResNet-50 (batch 16, 224x224) or a transformers Llama-style
    decoder (8 layers, hidden 1024, batch 4 x `tokens`), random weights."""
    if model == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 3, 224, 224, generator=g)
        return net, x, lambda n, inp: n(inp)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                      num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048)
    net = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 32000, (4, tokens), generator=g)
    return net, ids, lambda n, inp: n(input_ids=inp, use_cache=False).logits

import numpy as np
import pytest
import torch
from torch import nn

from hilas.spaces import BlockDropSpace, ComposedSpace, FilterMaskSpace, model_stats


def zeroed_after_bn(model, space, genome):
    """The original model with each unkept filter's output forced to zero after its BatchNorm."""
    hooks = []
    convs_to_bn = {}
    names = dict(model.named_modules())
    for name in names:
        if name.endswith("conv1") or name.endswith("conv2"):
            convs_to_bn[name] = name[:-5] + "bn" + name[-1]
    convs_to_bn["stem.0"] = "stem.1"
    convs_to_bn.update({n: n[:-1] + "1" for n in names if n.endswith("shortcut.0")})
    for group, bits in zip(space.groups, space.slices(genome)):
        for member in group.members:
            mask = torch.from_numpy(bits.astype(np.float32)).view(1, -1, 1, 1)
            bn = names[convs_to_bn[member]]
            hooks.append(bn.register_forward_hook(lambda m, i, o, mask=mask: o * mask))
    return hooks


def test_groups_couple_residual_channels(tiny_resnet, example):
    space = FilterMaskSpace(tiny_resnet, example)
    coupled = next(g for g in space.groups if g.name == "stem.0")
    assert set(coupled.members) == {"stem.0", "stage1.0.conv2", "stage1.1.conv2"}
    assert space.n_var == sum(g.size for g in space.groups) == 8 * 3 + 16 * 3


def test_all_ones_reproduces_original(tiny_resnet, example, inputs):
    space = FilterMaskSpace(tiny_resnet, example)
    model = space.decode(space.baseline()).build()
    assert model is not tiny_resnet
    torch.testing.assert_close(model(inputs), tiny_resnet(inputs))


def test_masked_genome_equals_zeroed_channels(tiny_resnet, example, inputs):
    space = FilterMaskSpace(tiny_resnet, example)
    rng = np.random.default_rng(1)
    for _ in range(5):
        genome = space.repair((rng.random(space.n_var) < 0.6).astype(np.int64))
        pruned = space.decode(genome).build()
        hooks = zeroed_after_bn(tiny_resnet, space, genome)
        try:
            expected = tiny_resnet(inputs)
        finally:
            for h in hooks:
                h.remove()
        torch.testing.assert_close(pruned(inputs), expected, rtol=1e-4, atol=1e-5)


def test_decode_never_modifies_the_original(tiny_resnet, example):
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    space = ComposedSpace([BlockDropSpace(tiny_resnet, example), FilterMaskSpace(tiny_resnet, example)])
    space.decode(space.sample(np.random.default_rng(0))).build()
    after = tiny_resnet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shapes_params_and_flops_follow_the_widths(tiny_resnet, example):
    space = FilterMaskSpace(tiny_resnet, example)
    genome = space.baseline()
    for bits in space.slices(genome):
        bits[: len(bits) // 2] = 0
    cand = space.decode(genome)
    model = cand.build()
    assert model.stem[0].out_channels == cand.widths["stem.0"] == 4
    assert model.stage1[0].conv1.out_channels == cand.widths["stage1.0.conv1"] == 4
    assert model.stage2[0].conv2.out_channels == model.fc.in_features == 8
    expected_params = sum(p.numel() for p in model.parameters())
    stats = model_stats(model, example)
    assert stats.params == expected_params
    full = model_stats(tiny_resnet, example)
    assert stats.params < full.params and stats.flops < full.flops
    # FLOPs of the first conv: 2 * (kernel 3x3x1) * out channels * 8x8 positions.
    stem_flops = 2 * 9 * 4 * 64
    assert stats.flops > stem_flops


def test_repair_keeps_one_filter_per_group(tiny_resnet, example):
    space = FilterMaskSpace(tiny_resnet, example)
    genome = space.repair(np.zeros(space.n_var, dtype=np.int64))
    assert all(bits.sum() == 1 for bits in space.slices(genome))
    space.decode(genome).build()(example)


def test_arch_key_is_structure_only(tiny_resnet, example):
    space = FilterMaskSpace(tiny_resnet, example)
    a, b = space.baseline(), space.baseline()
    a[0] = 0
    b[1] = 0
    ca, cb = space.decode(a), space.decode(b)
    assert ca.structure_key == cb.structure_key
    assert ca.model_key != cb.model_key
    assert ca.structure_key != space.decode(space.baseline()).structure_key


def test_block_drop_finds_residual_blocks(tiny_resnet, example, inputs):
    drops = BlockDropSpace(tiny_resnet, example)
    assert drops.blocks == ["stage1.0", "stage1.1", "stage2.0", "stage2.1"]
    assert drops.shape_changing == {"stage2.0"}
    genome = np.array([0, 1, 0, 0])
    model = drops.decode(genome).build()
    assert isinstance(model.stage1[1], nn.Identity)
    with torch.no_grad():
        x = tiny_resnet.stem(inputs)
        x = tiny_resnet.stage1[0](x)
        expected = tiny_resnet.fc(torch.flatten(tiny_resnet.pool(tiny_resnet.stage2(x)), 1))
    torch.testing.assert_close(model(inputs), expected)


def test_a_shape_changing_block_drops_to_its_shortcut(tiny_resnet, example, inputs):
    """Untrained, the 1x1 convolution that replaces a downsampling block is the block's own shortcut
    (conv and BatchNorm folded into one)."""
    drops = BlockDropSpace(tiny_resnet, example, blocks=["stage2.0"])
    model = drops.decode(np.array([1])).build()
    assert isinstance(model.stage2[0], nn.Conv2d) and model.stage2[0].stride == (2, 2)
    with torch.no_grad():
        x = tiny_resnet.stage1(tiny_resnet.stem(inputs))
        torch.testing.assert_close(model.stage2[0](x), tiny_resnet.stage2[0].shortcut(x), rtol=1e-4, atol=1e-5)


def test_a_layer_that_is_not_a_block_cannot_be_dropped(tiny_resnet, example):
    with pytest.raises(ValueError, match="stem.0"):
        BlockDropSpace(tiny_resnet, example, blocks=["stem.0"])


def test_masks_and_drops_compose(tiny_resnet, example, inputs):
    drops, masks = BlockDropSpace(tiny_resnet, example), FilterMaskSpace(tiny_resnet, example)
    space = ComposedSpace([drops, masks])
    assert space.n_var == drops.n_var + masks.n_var
    rng = np.random.default_rng(3)
    for _ in range(5):
        cand = space.decode(space.sample(rng))
        out = cand.build()(inputs)
        assert out.shape == (4, 10)
    # genes of a group inside a dropped block change neither structure nor identity
    genome = space.baseline()
    genome[1] = 1  # drop stage1.1
    other = genome.copy()
    inner = drops.n_var + masks._offsets[2]  # first bit of stage1.1.conv1's group
    other[inner] = 0
    assert space.decode(genome).structure_key == space.decode(other).structure_key
    assert space.decode(genome).model_key == space.decode(other).model_key
    assert "x" in space.decode(genome).structure_key


def test_seeds_are_l1_masks_and_baseline(tiny_resnet, example):
    masks = FilterMaskSpace(tiny_resnet, example, seed_ratios=(0.5,))
    space = ComposedSpace([masks])
    seeds = space.seeds()
    assert np.array_equal(seeds[0], space.baseline())
    half = seeds[1]
    for group, bits in zip(masks.groups, masks.slices(half)):
        kept = group.importance[bits == 1]
        dropped = group.importance[bits == 0]
        assert len(kept) == round(group.size / 2)
        assert kept.min() >= dropped.max()


def test_genome_of_wrong_length_is_refused(tiny_resnet, example):
    space = FilterMaskSpace(tiny_resnet, example)
    with pytest.raises(ValueError, match="shape"):
        space.decode(np.ones(3, dtype=np.int64))

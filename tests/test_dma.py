"""Tests of ``netmem.dma``: the device constructor and its DMA mask."""
import errno

import pytest

from netmem import NetmemError
from netmem.dma import Device


def test_device_takes_a_name_by_keyword_or_position(machine):
    d = Device(machine, name="nvme0", dma_mask_bits=32, coherent=False)
    assert d.name == "nvme0" and d.dma_mask == 0xffffffff and d.dma_need_sync()
    d = Device(machine, "gpu0", 48)
    assert d.name == "gpu0" and d.dma_mask == (1 << 48) - 1 and not d.dma_need_sync()
    assert repr(Device(machine)) == "<Device dev0 mask=0xffffffffffffffff mapped=0>"


@pytest.mark.parametrize("bits", [11, 65])
def test_device_refuses_a_mask_that_is_not_one(machine, bits):
    with pytest.raises(NetmemError) as e:
        Device(machine, name="x", dma_mask_bits=bits)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("bits", [12, 24, 31, 32, 39, 48, 63, 64])
def test_dma_mask_has_the_low_bits_set(machine, bits):
    assert Device(machine, dma_mask_bits=bits).dma_mask == (1 << bits) - 1

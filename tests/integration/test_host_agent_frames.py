"""qubes-lite-host-agent with the test playing a client that sends a frame
the decoder refuses: an Error names why, that client is closed, and
everyone else is still served."""
import struct

from qltest import qlwire
from qltest.host import VM
from qltest.qlwire import pb


def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def test_frame_over_the_decode_budget_is_a_protocol_error(stack):
    """A frame under the size limit whose decoding would take more memory
    than the per-frame budget is the client's fault, as an undecodable one
    is: Error(PROTOCOL, "undecodable frame"), then the close."""
    c = stack.connect_host()
    # Exec (its field 1: argv) with ~500,000 empty entries: each costs the
    # decoder far more than its two bytes on the wire.
    exec_body = b"\x0a\x00" * ((qlwire.FRAME_MAX - 64) // 2)
    tag = (pb.Envelope.DESCRIPTOR.fields_by_name["exec"].number << 3) | 2
    body = varint(tag) + varint(len(exec_body)) + exec_body
    assert len(body) <= qlwire.FRAME_MAX
    c.send_raw(struct.pack(">I", len(body)) + body)
    frames = c.expect_closed(timeout=30)
    assert [n for n, _ in frames] == ["error"], frames
    assert frames[0][1].code == pb.ERROR_PROTOCOL
    assert frames[0][1].message == "undecodable frame"
    c.close()
    assert stack.host_status().vm == VM

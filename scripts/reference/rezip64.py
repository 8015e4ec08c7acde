"""Repacks a torch.save archive with zip64 records (central-directory zip64 extras and the zip64 end records), which
PyTorch itself writes only for archives beyond 4 GiB. Gives a small fixture for the zip64 path of src/io/zip.ts.
Needs only the Python standard library:

    python3 scripts/reference/rezip64.py test/fixtures/mixed-dtypes.pt test/fixtures/mixed-dtypes-zip64.pt
"""
import io
import struct
import sys
import zipfile


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    # The writer switches to zip64 for any size/offset above ZIP64_LIMIT and any entry count above
    # ZIP_FILECOUNT_LIMIT; lowering both forces every zip64 structure on a tiny archive.
    zipfile.ZIP64_LIMIT = 64
    zipfile.ZIP_FILECOUNT_LIMIT = 2
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED, allowZip64=True) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    data = bytearray(buf.getvalue())
    assert b'PK\x06\x06' in data and b'PK\x06\x07' in data, 'zip64 end records missing'
    # zipfile still fills the classic end record with the real (small) values; saturate them as a writer of a
    # huge archive must, so readers are forced through the zip64 end record.
    e = data.rfind(b'PK\x05\x06')
    struct.pack_into('<HHHHII', data, e + 4, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as check:
        assert check.testzip() is None
    with open(dst, 'wb') as f:
        f.write(data)
    print(f'{dst}: {len(data)} bytes')


if __name__ == '__main__':
    main()

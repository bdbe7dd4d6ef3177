"""optarena.system: the CPU's name and flags, read once from /proc/cpuinfo."""
import platform

from optarena import system


def test_cpu_name_and_flags_come_from_the_first_processor(monkeypatch, tmp_path):
    text = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(tmp_path / "cpuinfo", *args, **kwargs) if path == "/proc/cpuinfo" else real_open(path, *args, **kwargs)

    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setattr("builtins.open", fake_open)
    system._cpuinfo.cache_clear()
    try:
        assert system.cpu_name() == "Test CPU 9000"
        assert system.cpu_flags() == {"fpu", "avx2", "avx512f"}
    finally:
        system._cpuinfo.cache_clear()


def test_without_cpuinfo_the_platform_names_the_cpu(monkeypatch):
    def no_file(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr("builtins.open", no_file)
    system._cpuinfo.cache_clear()
    try:
        assert system.cpu_name() == (platform.processor() or platform.machine())
        assert system.cpu_flags() == frozenset()
    finally:
        system._cpuinfo.cache_clear()

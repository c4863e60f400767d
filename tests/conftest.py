"""The fixtures every test may use, from the helper package: guest_agent
(qltest.guest), host_stack and stack (qltest.host), vmm_stack (qltest.vmm),
switch_run (qltest.switch), wayland_runtime_dir (qltest.weston)."""
pytest_plugins = ["qltest.guest", "qltest.host", "qltest.vmm", "qltest.switch", "qltest.weston"]

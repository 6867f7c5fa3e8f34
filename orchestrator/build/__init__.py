"""A build's own work: reading a PKGBUILD (srcinfo, readers, skeleton), choosing its variant,
running it in a step (runner, inspector, watchdog) and the build caches it mounts."""

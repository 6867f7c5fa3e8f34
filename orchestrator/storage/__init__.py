"""What the service keeps on disk: the job store, checkpoints, uploads and archives, the disk
guard, and the lock that makes one service per data dir."""

"""What faces the operating system: durable (atomic) writes, the on-disk cache, process lifetime.

    durable     a file is replaced whole or not at all (temp file, fsync, rename, fsync the folder)
    disk_cache  JSON results that are slow to recompute, in the user cache dir
    process     helper processes end when the process that started them is gone
    child_call  one call in a spawned child, its progress and result sent back over a pipe
    torchrun    torch's launcher as one command line (the engine's and the app's export's)
"""

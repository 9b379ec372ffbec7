// A vhost-user-blk frontend (part 3).

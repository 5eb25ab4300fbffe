"""``shardline relay``: a local daemon that takes newline-delimited JSON events from any
language (PHP under php-fpm above all, where no background thread exists) on a unix socket
or 127.0.0.1, journals them (fsync, group commit) before it answers, and ships them through
``shardline.producer.Producer``. ``core``: the engine (validate, commit, ship); ``journal``:
the segment files; ``server``: the sockets and the protocol; ``main``: the command.
docs/producer.md describes the protocol and when to use the relay.
"""

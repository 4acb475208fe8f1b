package dev.outbox.relay.standalone;

/** This module's suite runs under BlockHound. */
class BlockHoundInstalledTest extends dev.outbox.testing.BlockHoundCheck {}

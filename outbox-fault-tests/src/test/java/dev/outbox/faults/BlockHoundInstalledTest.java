package dev.outbox.faults;

/** This module's suite (the load writer and checker side) runs under BlockHound. */
class BlockHoundInstalledTest extends dev.outbox.testing.BlockHoundCheck {}

package dev.outbox.examples.webflux;

import dev.outbox.testing.BlockHoundCheck;

/** The example's suite runs under BlockHound too. */
class BlockHoundInstalledTest extends BlockHoundCheck {}

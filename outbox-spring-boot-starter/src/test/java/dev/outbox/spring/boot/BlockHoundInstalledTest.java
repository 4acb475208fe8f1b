package dev.outbox.spring.boot;

import dev.outbox.testing.BlockHoundCheck;

/** The starter's suite runs under BlockHound too. */
class BlockHoundInstalledTest extends BlockHoundCheck {}

package dev.outbox.test;

import dev.outbox.testing.BlockHoundCheck;

/** This module's suite runs under BlockHound. */
class BlockHoundInstalledTest extends BlockHoundCheck {}

/** Runnable examples; see the README. */
package dev.outbox.examples;

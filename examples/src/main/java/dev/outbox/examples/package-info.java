/** Runnable examples; see the README's demo command. */
package dev.outbox.examples;

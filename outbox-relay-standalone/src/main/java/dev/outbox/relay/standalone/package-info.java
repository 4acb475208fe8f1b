/** The relay as a standalone process (placeholder; being built). */
package dev.outbox.relay.standalone;

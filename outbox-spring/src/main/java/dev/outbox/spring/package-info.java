/** Spring transaction interop for the outbox writer (placeholder; being built). */
package dev.outbox.spring;

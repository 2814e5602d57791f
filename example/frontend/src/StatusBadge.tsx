import type { ConnectionStatus } from '@rxdjango/react';

/** The connection status; its text is exactly the status string. */
export function StatusBadge({ status, testId }: { status: ConnectionStatus; testId: string }) {
  return (
    <span className={`status status-${status}`} data-testid={testId} title="WebSocket connection">
      {status}
    </span>
  );
}

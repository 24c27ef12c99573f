/** Placeholder replaced below in this session. */
export async function runTraceCommand(_argv: string[]): Promise<number> {
  return 1;
}
export async function runReportCommand(_argv: string[]): Promise<number> {
  return 1;
}

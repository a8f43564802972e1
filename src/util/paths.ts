import { homedir } from 'node:os';
import { join } from 'node:path';

/** graft's own folder for caches (models, features): GRAFT_HOME, else the user's cache dir. */
export function graftHome(): string {
  if (process.env.GRAFT_HOME) return process.env.GRAFT_HOME;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.length > 0 ? xdg : join(homedir(), '.cache'), 'graft');
}

/** Where assets shipped with the package live (works from src/ under tsx and from dist/). */
export function assetPath(name: string): string {
  return new URL(`../../assets/${name}`, import.meta.url).pathname;
}

import react from '@vitejs/plugin-react';
import { defineConfig, loadEnv } from 'vite';

export default defineConfig(({ mode }) => {
  // `npm run dev` proxies the API and the sockets to the Django server.
  const django = loadEnv(mode, '.', '').DJANGO_URL || 'http://127.0.0.1:8000';
  return {
    base: '/',
    plugins: [react()],
    resolve: {
      // `@rxdjango/react` is a `file:` link to ../../client, which may have
      // its own node_modules/react (its dev dependencies). Resolve React from
      // this project only, so that the hooks and the app share one React.
      dedupe: ['react', 'react-dom'],
    },
    build: {
      outDir: 'dist',
      assetsDir: 'assets',
      emptyOutDir: true,
    },
    server: {
      proxy: {
        '/api': django,
        '/admin': django,
        '/ws': { target: django, ws: true },
      },
    },
  };
});

-- LÖVE's settings for examples/love (read before main.lua): a small window,
-- and no audio (the example makes no sound, and a test machine under Xvfb
-- has no sound device).
function love.conf(t)
  t.identity = "lxmpp-example"
  t.version = "11.4"
  t.window.title = "lxmpp in LÖVE"
  t.window.width = 640
  t.window.height = 360
  t.modules.audio = false
  t.modules.sound = false
end

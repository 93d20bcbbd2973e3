
m142*
xBYTES
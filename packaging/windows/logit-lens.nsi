; NSIS installer for logit-lens (built by build-windows.ps1, which defines VERSION, STAGE and OUT).
Unicode true
Name "logit-lens ${VERSION}"
OutFile "${OUT}\logit-lens-${VERSION}-setup.exe"
InstallDir "$LOCALAPPDATA\Programs\logit-lens"
RequestExecutionLevel user

Page directory
Page instfiles

Section "Install"
  SetOutPath "$INSTDIR"
  File /r "${STAGE}\*"
  CreateShortCut "$SMPROGRAMS\logit-lens.lnk" "$INSTDIR\logit-lens.exe"
  ; Open .txt prompts with logit-lens ("Open with" entry).
  WriteRegStr HKCU "Software\Classes\Applications\logit-lens.exe\shell\open\command" "" '"$INSTDIR\logit-lens.exe" "%1"'
  WriteRegStr HKCU "Software\Classes\.txt\OpenWithList\logit-lens.exe" "" ""
  WriteUninstaller "$INSTDIR\uninstall.exe"
  WriteRegStr HKCU "Software\Microsoft\Windows\CurrentVersion\Uninstall\logit-lens" "DisplayName" "logit-lens"
  WriteRegStr HKCU "Software\Microsoft\Windows\CurrentVersion\Uninstall\logit-lens" "UninstallString" '"$INSTDIR\uninstall.exe"'
SectionEnd

Section "Uninstall"
  Delete "$SMPROGRAMS\logit-lens.lnk"
  RMDir /r "$INSTDIR"
  DeleteRegKey HKCU "Software\Classes\Applications\logit-lens.exe"
  DeleteRegKey HKCU "Software\Microsoft\Windows\CurrentVersion\Uninstall\logit-lens"
SectionEnd
